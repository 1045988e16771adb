"""What users declare: the rule catalogue and the built-in profiles.

`validations/rules.py` holds every rule the toolkit knows (one class each: what it checks,
its parameters and their ranges, the pandera check or Great Expectations expectation that
decides it); `validations/profiles/` holds the profiles, TOML files naming rules and their
thresholds. `toolkit.profiles` loads a profile into rule objects and `toolkit.validate` runs
them. Copy a profile to start your own and pass it with `--profile path.toml`; a new rule is
one class in rules.py plus one line in a profile.
"""

from pathlib import Path

PROFILES_DIR = Path(__file__).parent / "profiles"
