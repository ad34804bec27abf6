from rlm_mcp.cli import main

raise SystemExit(main())
