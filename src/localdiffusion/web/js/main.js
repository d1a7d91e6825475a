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
import { LANGUAGES, chooseLanguage, currentLanguage, loadLanguage, t } from "./i18n.js";
import { installTheme } from "./theme.js";
import { initTrain } from "./train.js";

// The guide's "Try it on my prompt" and the Compare page run on the Generate page's current settings.
const currentRecipe = async () => (await page("generate")).recipe();

const PAGES = {
  generate: { init: initGenerate, title: "page.generate" },
  gallery: { init: initGallery, title: "page.gallery" },
  models: { init: initModels, title: "page.models" },
  library: { init: initLibrary, title: "page.library" },
  comic: { init: initComic, title: "page.comic" },
  wall: { init: initWall, title: "page.wall" },
  compare: { init: (section) => initCompare(section, { currentRecipe }), title: "page.compare" },
  train: { init: initTrain, title: "page.train" },
  guide: { init: (section) => initGuide(section, { currentRecipe }), title: "page.guide" },
  console: { init: initConsole, title: "page.console", manages: true },
  present: { init: initPresent, title: "page.present", manages: true },
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
  document.title = `${t(PAGES[name].title)} · Local Diffusion`;
  closeMenu();
  const section = document.getElementById(`page-${name}`);
  try {
    (await page(name))?.show?.();
    document.body.dataset.ready = "true";
  } catch (error) {
    delete started[name];
    section.append(h("p", { class: "form-error" }, t("shell.pageFailed", { reason: error.detail || error.message })));
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

/** On a narrow screen the pages, theme and language fold behind a Menu button (CSS shows it below 1100 px). */
function installMenu() {
  const toggle = document.querySelector(".menu-toggle");
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    document.querySelector("header.top").classList.toggle("menu-open", open);
  });
  document.getElementById("top-menu").addEventListener("keydown", (event) => {
    if (event.key === "Escape" && toggle.getAttribute("aria-expanded") === "true") {
      closeMenu();
      toggle.focus();
    }
  });
}

function closeMenu() {
  document.querySelector(".menu-toggle")?.setAttribute("aria-expanded", "false");
  document.querySelector("header.top")?.classList.remove("menu-open");
}

/** Skip links move focus themselves: a plain #id link would change the hash, which is the router's. */
function installSkipLinks() {
  for (const link of document.querySelectorAll("a.skip-link")) {
    link.addEventListener("click", async (event) => {
      event.preventDefault();
      if (link.dataset.skip === "generate") {
        if (pageFromHash() !== "generate") {
          location.hash = "#/generate";
          await show("generate");
        }
        await page("generate");
        document.getElementById("gen-submit")?.focus();
      } else {
        document.getElementById("main").focus();
      }
    });
  }
}

function installLanguageMenu() {
  const select = document.getElementById("pref-language");
  for (const [code, name] of Object.entries(LANGUAGES)) select.append(h("option", { value: code, lang: code }, name));
  select.value = currentLanguage();
  select.addEventListener("change", () => chooseLanguage(select.value));
}

/** Start the studio: first who is signed in (with accounts, the sign-in page until someone is), then the pages. */
async function start() {
  await loadLanguage();
  installTheme(document.getElementById("pref-theme"));
  installLanguageMenu();
  installMenu();
  installSkipLinks();
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
  document.body.dataset.manages = String(manages);  // hides [data-manages] actions (studio.css) from participants
  window.addEventListener("hashchange", () => show(pageFromHash()));
  onJobEvent(() => {}); // open the event socket at once, so no early event of a job is missed
  installPageDrop();
  installGuideLinks();
  showStatus();
  show(pageFromHash());
}

start();
