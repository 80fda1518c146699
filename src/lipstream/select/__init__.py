"""Choosing a backend (renderer, variant, precision, device) and driver from measured profiles.

```python
from lipstream.select import choose, load_profiles, preset_constraints
choice = choose(load_profiles().profiles, preset_constraints("real_time", device="cpu"))
print(choice.profile.backend, choice.profile.precision, choice.reason)
```
"""

from lipstream.select.choose import PRESETS, Choice, Constraints, choose, preset_constraints
from lipstream.select.history import BackendHistory, load_history, record_outcome
from lipstream.select.profiles import (Profile, ProfileSet, backend_label, default_profiles_path, load_profiles,
                                      machine_profiles, save_profiles)

__all__ = ["PRESETS", "BackendHistory", "Choice", "Constraints", "Profile", "ProfileSet", "backend_label", "choose",
           "default_profiles_path", "load_history", "load_profiles", "machine_profiles", "preset_constraints",
           "record_outcome", "save_profiles"]
