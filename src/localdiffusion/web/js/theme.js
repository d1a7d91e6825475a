// Light, dark or the system's colour scheme: the choice sets <html data-theme> (studio.css reads it) and is
// remembered in localStorage; "system" follows prefers-color-scheme.

const STORAGE_KEY = "ld-theme";
const THEMES = ["system", "light", "dark"];

export function applyTheme(theme) {
  const root = document.documentElement;
  if (theme === "light" || theme === "dark") root.dataset.theme = theme;
  else delete root.dataset.theme;
}

/** Wire the theme <select> to the remembered choice. */
export function installTheme(select) {
  const saved = localStorage.getItem(STORAGE_KEY);
  const theme = THEMES.includes(saved) ? saved : "system";
  applyTheme(theme);
  select.value = theme;
  select.addEventListener("change", () => {
    localStorage.setItem(STORAGE_KEY, select.value);
    applyTheme(select.value);
  });
}
