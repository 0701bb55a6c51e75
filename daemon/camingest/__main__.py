from camingest.cli.main import main

raise SystemExit(main())
