"""The one strict base of every settings model (trial, data, synthesis, generator): unknown
fields are refused, assignments validated, NaN and infinity refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model that refuses unknown fields, validates assignments and refuses
    NaN / infinity (a typo in a YAML or `--set` is an error, never a silent default)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
