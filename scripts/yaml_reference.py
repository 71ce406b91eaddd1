"""Print the YAML reference table (from the config models) that the README carries."""

from autodistill._reference import markdown

if __name__ == "__main__":
    print(markdown(), end="")
