import sys

from midmix.errors import MidmixError
from midmix.train import preflight

# The recipe and its datasets are checked before torch and Composer are imported and any process group
# starts (every rank checks the same files: each stops with the same one line).
if len(sys.argv) > 1 and sys.argv[1] not in ("-h", "--help"):
    try:
        preflight.load_checked(sys.argv[1], sys.argv[2:])
    except MidmixError as e:
        print(f"midmix train: error: {e}", file=sys.stderr)
        sys.exit(2)

from midmix.train.run import main  # noqa: E402

sys.exit(main())
