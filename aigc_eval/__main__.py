from aigc_eval.cli import main

raise SystemExit(main())
