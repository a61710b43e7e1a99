"""Case names from NIfTI file names, shared by the CLI pairing and `evaluate_cases`: the one
rule lives in `tumorsweep.data.naming` (re-exported here for the callers that import it from
evaluation)."""

from __future__ import annotations

from tumorsweep.data.naming import NIFTI_SUFFIXES, case_name

__all__ = ["NIFTI_SUFFIXES", "case_name"]
