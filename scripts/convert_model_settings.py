"""Convert model folders from the older settings layout to one settings file.

Earlier releases kept a model's settings in keyframe_scorer.json and mod_router.json beside the
weights; now they are the `keyframe` and `mod` sections of vts_drive.json (vts_drive/config.py).

    python scripts/convert_model_settings.py FOLDER [FOLDER ...]

Each folder's two files are checked, written into vts_drive.json and removed; settings the file
already holds stay unless the older files set them too (then those win: they were copied over it,
as when a newly trained model in the older layout replaces a converted one). A folder without
them is left as it is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vts_drive.config import SETTINGS_FILE, check_layers, flatten, write_settings
from vts_drive.errors import InputError

OLD_FILES = {"keyframe_scorer.json": "keyframe", "mod_router.json": "mod"}


def convert(folder: Path) -> bool:
    """True when the folder had settings in the older layout (now converted)."""
    old = {folder / name: section for name, section in OLD_FILES.items() if (folder / name).is_file()}
    if not old:
        return False
    settings = {}
    for path, section in old.items():
        settings |= flatten({section: json.loads(path.read_text())})
    check_layers([(", ".join(str(path) for path in old), settings)])
    existing = folder / SETTINGS_FILE
    if existing.is_file():
        settings = flatten(json.loads(existing.read_text())) | settings
    for path in old:
        path.unlink()
    write_settings(folder, settings)
    return True


def main(folders: list[str]) -> int:
    if not folders:
        print(__doc__, file=sys.stderr)
        return 2
    for name in folders:
        folder = Path(name)
        try:
            changed = convert(folder)
        except (InputError, OSError, json.JSONDecodeError) as error:
            print(f"{folder}: not converted: {error}", file=sys.stderr)
            return 2
        print(f"{folder}: {'settings written to ' + SETTINGS_FILE if changed else 'nothing to convert'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
