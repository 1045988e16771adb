"""What users declare: the built-in validation profiles (rule names and thresholds).

A profile is a TOML (or YAML) file naming rules and their parameters; `toolkit.profiles`
loads it into rule objects and `toolkit.validate` runs them. Copy a file from
`validations/profiles/` to start your own and pass it with `--profile path.toml`.
"""

from pathlib import Path

PROFILES_DIR = Path(__file__).parent / "profiles"
