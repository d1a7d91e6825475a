// The studio's entry point: a hash router over the pages, the status line and the page-wide PNG drop.

import { api } from "./api.js";
import { h, on } from "./dom.js";
import { initGenerate } from "./generate.js";
import { initGallery } from "./gallery.js";
import { initModels } from "./models.js";
import { initGuide, installGuideLinks } from "./guide.js";
import { initComic } from "./comic.js";
import { initCompare } from "./compare.js";
import { initWall } from "./wall.js";
import { installPageDrop } from "./pnginfo.js";
import { onJobEvent } from "./events.js";
import { installUserMenu, showSignIn, whoAmI } from "./account.js";
import { initConsole } from "./console.js";
import { initPresent } from "./present.js";
import { initLibrary } from "./library.js";
import { initTrain } from "./train.js";

// The guide's "Try it on my prompt" and the Compare page run on the Generate page's current settings.
const currentRecipe = async () => (await page("generate")).recipe();

const PAGES = {
  generate: { init: initGenerate, title: "Generate" },
  gallery: { init: initGallery, title: "Gallery" },
  models: { init: initModels, title: "Models" },
  library: { init: initLibrary, title: "Library" },
  comic: { init: initComic, title: "Comic" },
  wall: { init: initWall, title: "Class wall" },
  compare: { init: (section) => initCompare(section, { currentRecipe }), title: "Compare" },
  guide: { init: (section) => initGuide(section, { currentRecipe }), title: "Guide" },
  train: { init: (section) => initTrain(section, { useInGenerate: async (recipe) => (await page("generate")).useRecipe(recipe) }), title: "Train" },
  console: { init: initConsole, title: "Console", manages: true },
  present: { init: initPresent, title: "Presenter view", manages: true },
};
let manages = false; // a facilitator, or the local owner without accounts: the console and the presenter view
const started = {};

function pageFromHash() {
  const name = location.hash.replace(/^#\/?/, "").split("/")[0];
  return PAGES[name] && (manages || !PAGES[name].manages) ? name : "generate";
}

/** The page object of `name`, built on first use. */
function page(name) {
  started[name] ||= Promise.resolve(PAGES[name].init(document.getElementById(`page-${name}`)));
  return started[name];
}

async function show(name) {
  for (const [other] of Object.entries(PAGES)) {
    const hidden = other !== name;
    if (hidden && started[other] && !document.getElementById(`page-${other}`).hidden) (await started[other])?.hide?.();
    document.getElementById(`page-${other}`).hidden = hidden;
  }
  for (const link of document.querySelectorAll("nav a[data-page]")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${PAGES[name].title} · Local Diffusion`;
  const section = document.getElementById(`page-${name}`);
  try {
    (await page(name))?.show?.();
    document.body.dataset.ready = "true";
  } catch (error) {
    delete started[name];
    section.append(h("p", { class: "form-error" }, `This page could not load: ${error.detail || error.message}`));
  }
}

async function showStatus() {
  const el = document.getElementById("device-status");
  try {
    const status = await api.get("/api/status");
    el.textContent = `${status.device} · ${status.dtype}`;
    el.title = `Local Diffusion ${status.version}`;
  } catch (error) {
    el.textContent = error.detail;
  }
}

// The gallery and the PNG reader hand recipes and images to the Generate page, built or not.
on("use-recipe", async (recipe) => (await page("generate")).useRecipe(recipe));
on("send-to", async (message) => (await page("generate")).sendTo(message));

/** Start the studio: first who is signed in (with accounts, the sign-in page until someone is), then the pages. */
async function start() {
  let me = null;
  try {
    me = await whoAmI();
  } catch {
    /* an older server without accounts: start as before */
  }
  if (me?.signedOut) {
    showSignIn(document.getElementById("main"), me);
    return;
  }
  if (me?.accounts) installUserMenu(document.querySelector("header.top"), me.user);
  manages = ["facilitator", "owner"].includes(me?.user?.role ?? "owner");
  for (const link of document.querySelectorAll("nav a[data-manages]")) link.hidden = !manages;
  window.addEventListener("hashchange", () => show(pageFromHash()));
  onJobEvent(() => {}); // open the event socket at once, so no early event of a job is missed
  installPageDrop();
  installGuideLinks();
  showStatus();
  show(pageFromHash());
}

start();
