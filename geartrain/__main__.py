from geartrain.cli.main import main

raise SystemExit(main())
