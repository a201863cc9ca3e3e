"""The registry: lookup, errors, and the taxonomy coverage the project promises."""

from dataclasses import dataclass

import pytest

import reproductions
from reproductions.interface import Method
from reproductions.registry import register


def test_every_modality_and_mechanism_cell_has_a_method():
    cells = {
        (modality, mechanism)
        for cls in reproductions.methods().values()
        for modality in cls.modality
        for mechanism in cls.mechanisms
    }
    for modality in ("image", "video", "audio"):
        for mechanism in ("transformation", "similarity", "attention", "query"):
            assert (modality, mechanism) in cells, f"no {mechanism} method for {modality}"


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="no method named 'fastvv'.*fastv"):
        reproductions.get("fastvv")


def test_a_name_cannot_be_taken_twice():
    with pytest.raises(ValueError, match="already registered"):

        @register("fastv")
        @dataclass
        class Impostor(Method):
            """Not FastV."""


def test_get_passes_hyperparameters_and_validates_them():
    assert reproductions.get("fastv", keep=8, layer=3) == reproductions.methods()["fastv"](8, 3)
    with pytest.raises(ValueError, match="keep"):
        reproductions.get("fastv", keep=-1)
