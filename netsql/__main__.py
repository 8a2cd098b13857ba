from netsql.cli import main

raise SystemExit(main())
