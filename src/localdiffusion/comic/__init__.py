"""Comic feature layer: projects of pages and panels, layouts, panel prompts, lettering and export.

    from localdiffusion.comic import Project, new_page, compose_prompt, panel_recipe
    project = Project(title="The lost robot")
    project.pages.append(new_page(project, "grid-2x2"))

It calls the engine for images and draws everything else itself; it has no torch plumbing.
"""

from localdiffusion.comic.layouts import (
    TEMPLATES, apply_template, merge_panels, move_gutter, new_page, ordered_panels, set_border, set_gutter,
    slant_border, split_panel, template, templates_json,
)
from localdiffusion.comic.model import (
    MAX_PANELS, Balloon, Box, Candidate, Character, ImageView, Page, PageSize, Panel, Point, Project, Style, page_size,
)
from localdiffusion.comic.prompts import compose_prompt, consistency_notes, panel_prompt, panel_recipe
from localdiffusion.comic.storage import export_archive, import_archive, open_project, save_project

__all__ = [
    "TEMPLATES", "MAX_PANELS", "Balloon", "Box", "Candidate", "Character", "ImageView", "Page", "PageSize", "Panel",
    "Point", "Project", "Style", "apply_template", "compose_prompt", "consistency_notes", "export_archive",
    "import_archive", "merge_panels", "move_gutter", "new_page", "open_project", "ordered_panels", "page_size",
    "panel_prompt", "panel_recipe", "save_project", "set_border", "set_gutter", "slant_border", "split_panel",
    "template", "templates_json",
]
