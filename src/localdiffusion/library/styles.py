"""Style files in both directions: A1111's `styles.csv` and Fooocus / SDXL-styler JSON.

A1111 (modules/styles.py) reads with `csv.DictReader(file, skipinitialspace=True)` in "utf-8-sig", takes
`prompt` or the legacy `text` column, and writes with `csv.DictWriter(fieldnames=("name", "prompt",
"negative_prompt"))`, a header, excel's dialect ("\\r\\n" line ends, minimal quoting) and a BOM. `write_csv`
writes exactly that, so a file A1111 wrote comes back byte for byte. Fooocus reads a JSON list of
`{"name", "prompt", "negative_prompt"}`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from localdiffusion.errors import BadInput

CSV_FIELDS = ("name", "prompt", "negative_prompt")


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def read_text(path: Path) -> str:
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise BadInput(f"{Path(path).name}, line {line}: this is not UTF-8 text (byte {data[e.start]:#04x}); save the file as UTF-8.") from None


def read_csv_styles(path: Path) -> list[Style]:
    text = read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True)
    fields = reader.fieldnames or []
    if "name" not in fields or not ({"prompt", "text"} & set(fields)):
        raise BadInput(f"{Path(path).name}, line 1: a styles file starts with the header name,prompt,negative_prompt "
                       f"(or the older name,text); this one has {','.join(fields) or 'nothing'}.")
    styles = []
    try:
        for row in reader:
            if None in row:
                raise BadInput(f"{Path(path).name}, line {reader.line_num}: this row has more fields than the header "
                               f"({len(fields)}); put a text that holds a comma in double quotes.")
            name = row.get("name") or ""
            if not name or name.startswith("#"):
                continue
            prompt = row["prompt"] if "prompt" in row else row["text"]
            styles.append(Style(name, prompt or "", row.get("negative_prompt") or ""))
    except csv.Error as e:
        raise BadInput(f"{Path(path).name}, line {reader.line_num}: {e}.") from None
    return styles


def read_json_styles(path: Path) -> list[Style]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise BadInput(f"{Path(path).name}, line {e.lineno}: this is not valid JSON ({e.msg}).") from None
    if not isinstance(data, list):
        raise BadInput(f"{Path(path).name}: a style file is a JSON list of {{\"name\", \"prompt\", \"negative_prompt\"}}; this one is a {type(data).__name__}.")
    styles = []
    for i, item in enumerate(data, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise BadInput(f"{Path(path).name}, item {i}: each style needs a \"name\" (text); this item has {json.dumps(item)[:80]}.")
        styles.append(Style(item["name"], str(item.get("prompt") or ""), str(item.get("negative_prompt") or "")))
    return styles


def csv_bytes(styles: list[Style]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows({"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in styles)
    return buffer.getvalue().encode("utf-8-sig")


def json_bytes(styles: list[Style]) -> bytes:
    items = [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in styles]
    return (json.dumps(items, indent=4, ensure_ascii=False) + "\n").encode("utf-8")
