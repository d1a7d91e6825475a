// The studio's languages: message catalogues in web/i18n/<language>.json, one file per language, with the same keys.
//
// t("gallery.count", { count: 3 }) looks the key up in the chosen language (English where a key is missing),
// picks the plural form through Intl.PluralRules when the message is an object ({"one": ..., "other": ...}) and
// fills {name} placeholders, formatting numbers with Intl.NumberFormat. The language follows the browser
// (navigator.languages) until a person picks one in the menu; the choice is remembered in localStorage.
// Static text in index.html names its key in data-i18n (text) or data-i18n-attr ("aria-label:key; title:key").

export const LANGUAGES = { en: "English", de: "Deutsch" };
const STORAGE_KEY = "ld-language";

let language = "en";
let messages = {};
let fallback = {};

/** The language code in use ("en", "de"). */
export function currentLanguage() {
  return language;
}

/** The language a person chose, else the first of the browser's languages the studio has, else English. */
export function preferredLanguage() {
  const chosen = localStorage.getItem(STORAGE_KEY);
  if (chosen && LANGUAGES[chosen]) return chosen;
  for (const tag of navigator.languages || [navigator.language]) {
    const base = String(tag || "").toLowerCase().split("-")[0];
    if (LANGUAGES[base]) return base;
  }
  return "en";
}

async function catalogue(code) {
  const response = await fetch(`/i18n/${code}.json`);
  if (!response.ok) throw new Error(`The ${code} catalogue could not load (${response.status}).`);
  return response.json();
}

/** Load the preferred language (call once before building pages); `<html lang>` follows it. */
export async function loadLanguage(code = preferredLanguage()) {
  fallback = await catalogue("en");
  language = code;
  try {
    messages = code === "en" ? fallback : await catalogue(code);
  } catch {
    language = "en";
    messages = fallback;
  }
  document.documentElement.lang = language;
  translateStatic(document);
  return language;
}

/** Remember `code` as this browser's choice and show the studio in it (the pages are rebuilt by a reload). */
export function chooseLanguage(code) {
  localStorage.setItem(STORAGE_KEY, code);
  location.reload();
}

/** A number in the current language's format (1,234.5 or 1.234,5). */
export function formatNumber(value, options = {}) {
  return new Intl.NumberFormat(language, options).format(value);
}

/** The message of `key`, its plural form chosen by `values.count`, with `{name}` placeholders filled. */
export function t(key, values = {}) {
  let message = messages[key] ?? fallback[key];
  if (message === undefined) {
    console.warn(`No message for "${key}"`);
    return key;
  }
  if (typeof message === "object") {
    const form = new Intl.PluralRules(language).select(Number(values.count ?? 0));
    message = message[form] ?? message.other;
  }
  return message.replace(/\{(\w+)\}/g, (whole, name) => {
    const value = values[name];
    if (value === undefined || value === null) return whole;
    return typeof value === "number" ? formatNumber(value, { useGrouping: false }) : String(value);
  });
}

/** Fill the elements under `root` that name a key in data-i18n / data-i18n-attr. */
export function translateStatic(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of el.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":").map((part) => part.trim());
      if (attr && key) el.setAttribute(attr, t(key));
    }
  }
}
