"""Recipe parsing and validation (deploy/images/recipe.py): good recipes parse, bad ones are
refused with a message naming the recipe and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.images.recipe import Recipe, RecipeError, load_recipe, parse_recipe

RECIPES = Path(__file__).resolve().parents[3] / "deploy" / "images" / "recipes"

GOOD = """
name = "atlas-wn"
base = "debian12"
vo = "atlas"
visibility = "PUBLIC"
packages = ["bc", "libstdc++6", "python3.11"]

[[files]]
path = "/etc/motd"
content = "hello\\n"
"""


def test_a_good_recipe_parses() -> None:
    # Execute
    recipe = parse_recipe(GOOD, source="atlas-wn.toml")

    # Assert
    assert (recipe.name, recipe.base, recipe.vo, recipe.visibility) == ("atlas-wn", "debian12", "atlas", "PUBLIC")
    assert recipe.packages == ("bc", "libstdc++6", "python3.11")
    assert recipe.files[0].path == "/etc/motd" and recipe.files[0].content == b"hello\n" and recipe.files[0].mode == 0o644
    assert len(recipe.sha256) == 64
    assert recipe.customizations()[0] == f"recipe atlas-wn.toml sha256:{recipe.sha256}"
    assert "packages bc libstdc++6 python3.11" in recipe.customizations()


def test_the_recipe_hash_follows_the_text() -> None:
    assert parse_recipe(GOOD).sha256 == parse_recipe(GOOD).sha256
    assert parse_recipe(GOOD).sha256 != parse_recipe(GOOD + "\n# changed\n").sha256


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.name)
def test_the_example_recipes_are_valid(path: Path) -> None:
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe) and recipe.name == path.stem


def test_file_sources_are_read_relative_to_the_recipe(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / "motd").write_bytes(b"from a file\n")
    (tmp_path / "r.toml").write_text('name = "x"\nbase = "tiny"\nvo = "cms"\n[[files]]\npath = "/etc/motd"\nsource = "motd"\nmode = "0600"\n')

    # Execute
    recipe = load_recipe(tmp_path / "r.toml")

    # Assert
    assert recipe.files[0].content == b"from a file\n" and recipe.files[0].mode == 0o600


MINIMAL = 'name = "x"\nbase = "debian12"\nvo = "cms"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\nbase = "centos7"\nvo = "cms"\n', "unknown base 'centos7' (one of tiny, debian12)"),
        (MINIMAL + 'pakages = ["bc"]\n', "unknown key(s) pakages"),
        (MINIMAL + 'packages = ["bc", "-oAPT::Get=1"]\n', "bad package name(s) '-oAPT::Get=1'"),
        (MINIMAL + 'packages = ["bc; rm -rf /"]\n', "bad package name(s)"),
        (MINIMAL + 'packages = ["BC"]\n', "bad package name(s) 'BC'"),
        (MINIMAL + 'packages = "bc"\n', "'packages' must be a list"),
        ('name = "x"\nbase = "tiny"\nvo = "cms"\npackages = ["bc"]\n', "base 'tiny' has no package manager"),
        ('name = "x"\nbase = "tiny"\n', "'vo' is required"),
        ('name = "Bad Name"\nbase = "tiny"\nvo = "cms"\n', "name 'Bad Name' must be"),
        (MINIMAL + 'visibility = "WORLD"\n', "visibility 'WORLD' must be one of PRIVATE, VO, PUBLIC"),
        (MINIMAL + '[[files]]\npath = "etc/motd"\ncontent = ""\n', "files[0]: 'path' must be an absolute"),
        (MINIMAL + '[[files]]\npath = "/etc/../motd"\ncontent = ""\n', "without '..'"),
        (MINIMAL + '[[files]]\npath = "/etc/motd"\n', "give exactly one of 'content' or 'source'"),
        (MINIMAL + '[[files]]\npath = "/etc/motd"\ncontent = ""\nowner = "root"\n', "files[0]: unknown key(s) owner"),
        (MINIMAL + '[[files]]\npath = "/etc/motd"\ncontent = ""\nmode = "755x"\n', "'mode' must be an octal string"),
        (MINIMAL + '[[files]]\npath = "/etc/motd"\nsource = "../secret"\n', "'source' must be a path relative"),
        (MINIMAL + "name = 3\n", "not valid TOML"),
    ],
)
def test_bad_recipes_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(RecipeError) as err:
        parse_recipe(text, source="bad.toml")
    assert str(err.value).startswith("bad.toml: ")
    assert message in str(err.value)
