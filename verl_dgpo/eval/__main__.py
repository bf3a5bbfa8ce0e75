import sys

from verl_dgpo.eval.runner import main

sys.exit(main())
