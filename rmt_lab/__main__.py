from rmt_lab.cli import main

raise SystemExit(main())
