"""Base pydantic models shared by every config section.

Configs are plain validated data: no torch or gunpowder object is built when they are
created. Unknown keys are rejected so that a typo in a YAML file is an error, not a silent
default.
"""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A config model that rejects unknown keys and is immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
