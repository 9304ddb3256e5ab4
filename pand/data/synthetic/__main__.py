"""``python -m pand.data.synthetic``: see :func:`pand.data.synthetic.cli.main`."""
from .cli import main

if __name__ == "__main__":
    main()
