from deeplab_kit.cli import main

raise SystemExit(main())
