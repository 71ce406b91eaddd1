"""Print the YAML reference tables (from the config models) that the README carries: the
image_classification study file, then the sections of a language_modeling one."""

from autodistill._reference import markdown, text_markdown

if __name__ == "__main__":
    print(markdown(), end="")
    print()
    print(text_markdown(), end="")
