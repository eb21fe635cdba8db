"""The shared argument checks in magnet_lab.validation: what passes, what is refused and how."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from magnet_lab import validation
from magnet_lab.validation import (ArgumentTypeError, check_choice, check_int,
                                   check_positive_int, check_real)


def test_check_int_accepts_integers_of_any_integral_type_and_returns_int():
    assert check_int("n", 3) == 3
    value = check_int("n", np.int64(4), low=1)
    assert value == 4 and type(value) is int
    assert check_int("n", None, optional=True) is None
    assert check_int("n", 5, low=5, high=5) == 5
    assert check_positive_int("chunk", 1) == 1


@pytest.mark.parametrize("value", [True, False, 2.0, "3", None, torch.tensor(3)])
def test_check_int_refuses_non_integers_and_bools_as_type_errors_that_are_value_errors(value):
    with pytest.raises(ArgumentTypeError, match=r"^k must be an integer, got") as info:
        check_int("k", value)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_check_int_names_the_bound_it_breaks():
    with pytest.raises(ValueError, match="chunk must be >= 1, got chunk=0"):
        check_int("chunk", 0, low=1)
    with pytest.raises(ValueError, match="k must be <= 3, got k=4"):
        check_int("k", 4, high=3)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        check_positive_int("chunk", -2, optional=True)


def test_check_real_accepts_ints_and_floats_and_refuses_bools_nan_and_bounds():
    assert check_real("rho", 2) == 2.0 and isinstance(check_real("rho", 2), float)
    assert check_real("tol", np.float32(0.5), positive=True) == 0.5
    assert check_real("psi", None, optional=True) is None
    with pytest.raises(ArgumentTypeError, match="rho must be a real number, got True"):
        check_real("rho", True)
    with pytest.raises(ArgumentTypeError, match="tol must be a real number, got '1e-6'"):
        check_real("tol", "1e-6")
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="rho must be a finite number"):
            check_real("rho", bad)
    with pytest.raises(ValueError, match="psi must be > 0, got psi=0"):
        check_real("psi", 0, positive=True)
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\], got fraction=1.5"):
        check_real("fraction", 1.5, low=0, high=1)
    with pytest.raises(ValueError, match=r"x must be in \[-inf, 2\]"):
        check_real("x", 3, high=2)


def test_check_choice_names_the_choices():
    assert check_choice("method", "topk", ("exact", "topk")) == "topk"
    with pytest.raises(ValueError, match=r"unknown method 'svd'; expected one of \('exact',"):
        check_choice("method", "svd", ["exact", "topk"])


def test_latent_and_label_batches_of_a_mapping_network():
    """The one check the StyleGAN2 and StyleGAN3 mapping networks share: a single z becomes a
    batch of one, labels must match the batch, unconditional networks refuse labels."""
    import torch

    from magnet_lab.validation import check_label_batch, check_latent_batch

    z = check_latent_batch(torch.ones(4, dtype=torch.float32), 4, torch.float64)
    assert z.shape == (1, 4) and z.dtype == torch.float64
    with pytest.raises(ValueError, match=r"z must have shape \[B, z_dim=4\], got \(2, 3\)"):
        check_latent_batch(torch.ones(2, 3), 4, torch.float32)
    with pytest.raises(ValueError, match="non-finite"):
        check_latent_batch(torch.tensor([[float("nan")] * 4]), 4, torch.float32)
    with pytest.raises(TypeError, match="floating point"):
        check_latent_batch(torch.ones(2, 4, dtype=torch.int64), 4, torch.float32)
    assert check_label_batch(None, 2, 0, torch.float32) is None
    with pytest.raises(ValueError, match="unconditional"):
        check_label_batch(torch.ones(2, 3), 2, 0, torch.float32)
    with pytest.raises(ValueError, match=r"conditional \(c_dim=3\); pass labels c \[B=2, c_dim=3\]"):
        check_label_batch(None, 2, 3, torch.float32)
    assert check_label_batch(torch.eye(3)[0], 1, 3, torch.float64).shape == (1, 3)
    with pytest.raises(ValueError, match=r"c must have shape \[B=2, c_dim=3\]"):
        check_label_batch(torch.eye(3), 2, 3, torch.float32)


def test_check_class_ids_is_the_one_class_id_check():
    """Used by Sampler, sampling.equal_class_counts, class_quality and the per-class study: a
    non-empty sequence of distinct ints >= 0 (below n_classes when given), errors naming the
    argument and the offending id."""
    assert validation.check_class_ids((3, 0)) == [3, 0]
    assert validation.check_class_ids(range(3), 3) == [0, 1, 2]
    assert validation.check_class_ids([10**6]) == [10**6]  # no upper bound without n_classes
    for bad, match in [((), "non-empty"), ("01", "non-empty"), (3, "non-empty"),
                       ((-1,), r"class id -1 in classes=\[-1\]"), ((True,), "class id True"),
                       ((1.0,), "class id 1.0"), ((1, 1), "distinct")]:
        with pytest.raises(ValueError, match=match):
            validation.check_class_ids(bad)
    with pytest.raises(ValueError, match=r"class ids \[0, 9\], got class id 10 in wanted"):
        validation.check_class_ids([0, 10], 10, name="wanted")
