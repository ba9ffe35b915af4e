from modelops_loadgen.cli import main

raise SystemExit(main())
