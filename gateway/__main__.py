"""`python -m gateway` is `sailcast gateway`."""

from gateway.cli import main

if __name__ == "__main__":
    main(["gateway", *__import__("sys").argv[1:]])
