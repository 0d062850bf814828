from medbalance.cli.main import main

raise SystemExit(main())
