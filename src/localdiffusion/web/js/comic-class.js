// The comic editor's bar for working together: "Share to class wall", and on a class comic who may change what.
// A participant changes only the panels assigned to them: their edits are saved panel by panel
// (PUT /api/comics/{id}/panels/{panel}), and the sidebar of anyone else's panel is shown locked. A facilitator
// assigns the selected panel to a participant. Whenever someone in the class changes the comic, the server
// announces "comic-changed" on the event socket and the editor reads the comic again.

import { api, request } from "./api.js";
import { h, toast } from "./dom.js";
import { whoAmI } from "./account.js";
import { onJobEvent } from "./events.js";
import { ShareButton } from "./wall.js";

const BASE = "/api/comics";

export class ClassComicBar {
  constructor(host) {
    this.host = host;
    this.me = null;
    this.users = null;
    this.share = new ShareButton();
    this.info = h("span", { class: "hint", id: "comic-class-info" });
    this.assign = h("select", { id: "comic-assignee", onchange: () => this.assignTo(this.assign.value) });
    this.assignGroup = h("span", { class: "row", hidden: true }, h("label", { for: "comic-assignee" }, "Selected panel assigned to"), this.assign);
    this.el = h("div", { class: "comic-class" }, this.share.el, this.info, this.assignGroup);
    const render = host.sidebar.render.bind(host.sidebar);
    host.sidebar.render = () => {
      render();
      this.lock();
    };
    onJobEvent((event) => {
      if (event.type === "comic-changed" && event.data?.project_id === host.project?.id) host.refresh();
    });
  }

  /** Who is signed in ({name, role}), asked once. */
  async who() {
    if (!this.me) {
      try {
        this.me = (await whoAmI()).user || { name: "", role: "owner" };
      } catch {
        this.me = { name: "", role: "owner" };
      }
    }
    return this.me;
  }

  get manager() {
    return this.me?.role !== "participant";
  }

  /** May this tab change the whole project (anything but a participant on a class comic)? */
  whole(project) {
    return !project?.class_comic || this.manager;
  }

  mine(project, panelId) {
    return this.whole(project) || project.assignees?.[panelId] === this.me?.name;
  }

  async opened(project) {
    await this.who();
    this.share.el.hidden = !this.whole(project);
    if (this.whole(project)) this.share.load(`${BASE}/${project.id}`);
    this.render();
  }

  render() {
    const project = this.host.project;
    if (!project?.class_comic) {
      this.info.textContent = "";
      this.assignGroup.hidden = true;
      return;
    }
    const own = Object.values(project.assignees || {}).filter((name) => name === this.me?.name).length;
    this.info.textContent = this.manager
      ? "Class comic: everyone in the class opens it and fills the panels you assign them."
      : `Class comic: you fill the ${own} panel${own === 1 ? "" : "s"} assigned to you; the others' panels fill in as they work.`;
    this.assignGroup.hidden = !this.manager;
    if (this.manager) this.fillAssign();
  }

  async fillAssign() {
    if (!this.users) {
      try {
        this.users = (await api.get("/api/class/users")).filter((u) => u.role === "participant").map((u) => u.name);
      } catch {
        this.users = [];
      }
    }
    const panel = this.host.panel();
    const current = (panel && this.host.project.assignees?.[panel.id]) || "";
    this.assign.replaceChildren(h("option", { value: "" }, "nobody"), ...this.users.map((name) => h("option", { value: name }, name)));
    this.assign.value = current;
    this.assign.disabled = !panel;
  }

  /** On a class comic, someone else's panel: its sidebar is shown but locked, with a sentence saying whose it is. */
  lock() {
    const project = this.host.project;
    const panel = this.host.panel();
    if (this.manager && project?.class_comic) this.fillAssign();
    if (!project || !panel || this.mine(project, panel.id)) return;
    for (const child of this.host.sidebar.el.children) child.inert = true;
    const owner = project.assignees?.[panel.id];
    this.host.sidebar.el.prepend(h("p", { class: "panel-locked", role: "note" },
      owner ? `This panel is ${owner}'s: only ${owner} (and the facilitator) change it.` : "This panel is not assigned to you: only the facilitator changes it."));
  }

  /** A participant's save: each of their own panels that changed since `lastSaved`; the last answer (the comic), or null. */
  async savePanels(project, lastSaved) {
    const before = new Map(lastSaved.pages.flatMap((page) => page.panels.map((p) => [p.id, JSON.stringify(p)])));
    let answer = null;
    for (const panel of project.pages.flatMap((page) => page.panels)) {
      if (!this.mine(project, panel.id) || before.get(panel.id) === JSON.stringify(panel)) continue;
      answer = await request("PUT", `${BASE}/${project.id}/panels/${panel.id}`, panel);
    }
    return answer;
  }

  async assignTo(name) {
    const host = this.host;
    const panel = host.panel();
    if (!panel) return;
    try {
      await host.flush();
      const project = await request("PUT", `${BASE}/${host.project.id}/panels/${panel.id}/assignee`, { user: name || null });
      host.project = project;
      host.lastSaved = structuredClone(project);
      host.renderAll();
      toast(name ? `The panel is ${name}'s now.` : "The panel is nobody's now.");
    } catch (error) {
      toast(error.detail || String(error));
    }
  }
}
