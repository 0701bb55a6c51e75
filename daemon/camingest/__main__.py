from camingest.cli import main

raise SystemExit(main())
