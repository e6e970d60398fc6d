// Start-up, sign-in and navigation. The API key lives in sessionStorage only:
// it is forgotten when the tab closes and never leaves this origin except in
// the X-API-Key header.

import { api, onKeyRefused, setKey } from "./api.js";
import { $, announce } from "./dom.js";
import { clearHistory, initHistory } from "./history.js";
import { explain } from "./messages.js";
import { setLinkLifetime } from "./results.js";
import { forgetRemembered, initUpscale, resetUpscale, setCapabilities, setCredits } from "./upscale.js";

const KEY_STORAGE = "upscayl-cloud.apiKey";
let signedIn = false;
let reloadHistory = () => {};

function showCredits(caps) {
  const credits = caps.account ? caps.account.credits : null;
  $("#credits").textContent = credits === null ? "" : `${credits} credit${credits === 1 ? "" : "s"} left`;
  setCredits(credits);
}

async function refreshCredits() {
  try {
    showCredits(await api.capabilities());
  } catch {
    // Shown again on the next success; a failed refresh is not worth an alert.
  }
}

function route() {
  const wanted = signedIn ? (location.hash === "#/history" ? "history" : "upscale") : "signin";
  for (const name of ["signin", "upscale", "history"]) $(`#view-${name}`).hidden = name !== wanted;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.hash === `#/${wanted}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  $("#nav").hidden = !signedIn;
  $("#account").hidden = !signedIn;
  if (wanted === "history") reloadHistory();
  return wanted;
}

function go() {
  const view = route();
  // Move focus to the new view's heading, as a page load would.
  $(`#view-${view} h2`).focus();
}

async function signIn(key) {
  setKey(key);
  const caps = await api.capabilities();
  if (!caps.account) throw Object.assign(new Error("The server did not confirm this key"), { code: "UNAUTHORIZED" });
  // The tasks (and uploads not started) this tab remembers are the stored
  // key's (a reload while the server was away keeps both): another key
  // signing in resumed and showed them.
  if (sessionStorage.getItem(KEY_STORAGE) !== key) forgetRemembered();
  sessionStorage.setItem(KEY_STORAGE, key);
  signedIn = true;
  setLinkLifetime(caps.limits && caps.limits.downloadLinkSeconds);
  setCapabilities(caps, refreshCredits);
  showCredits(caps);
}

function signOut() {
  sessionStorage.removeItem(KEY_STORAGE);
  resetUpscale();
  clearHistory();
  setKey(null);
  signedIn = false;
  $("#api-key").value = "";
  location.hash = "";
  go();
  announce("Signed out");
}

async function main() {
  initUpscale();
  reloadHistory = initHistory();
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#signin-error");
    const button = $("#signin-form button");
    error.textContent = "";
    button.disabled = true;
    try {
      await signIn($("#api-key").value.trim());
      location.hash = "#/upscale";
      go();
      announce("Signed in");
    } catch (err) {
      setKey(null);
      error.textContent = explain(err);
    } finally {
      button.disabled = false;
    }
  });
  $("#sign-out").addEventListener("click", signOut);
  // The key revoked while signed in: every call would now fail, each card
  // and file saying so. Signing in again is the way on (with another key).
  onKeyRefused((err) => {
    if (!signedIn) return; // signing in: the form says why
    signOut();
    $("#signin-error").textContent = `${explain(err)} You have been signed out.`;
  });
  window.addEventListener("hashchange", go);
  // Credits change elsewhere (another program spends some, the operator adds
  // some): back in this tab, the balance and the Upscale button follow.
  window.addEventListener("focus", () => {
    if (signedIn) refreshCredits();
  });
  // "History" while on it: no hashchange, but a person expects fresh news.
  $('#nav a[href="#/history"]').addEventListener("click", () => {
    if (location.hash === "#/history") reloadHistory();
  });

  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved) {
    try {
      await signIn(saved);
    } catch (err) {
      setKey(null);
      if (err.status === 401 || err.code === "UNAUTHORIZED") {
        // The key itself is refused: forget it, and the tasks it started.
        sessionStorage.removeItem(KEY_STORAGE);
        resetUpscale();
      } else {
        // The server is away or restarting: a reload then cost the key.
        // It stays, ready to sign in with again.
        $("#api-key").value = saved;
        $("#signin-error").textContent = `${explain(err)} Your key is kept: press Sign in to try again.`;
      }
    }
  }
  route();
  document.body.dataset.ready = "true"; // for tests: listeners are attached
}

main();
