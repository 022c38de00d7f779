import sys

from midmix.train.run import main

sys.exit(main())
