// A tiny element builder: enough to keep views readable without a framework.

/** h("p.help", {id: "x"}, "text", child) -> element. Attributes starting with "on" are listeners. */
export function h(tag, attrs = {}, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name);
  if (classes.length) el.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

let said = []; // sentences waiting for the region, read out together

/** Say something to screen readers through the page's polite live region. */
export function announce(text) {
  const region = document.getElementById("announcer");
  // Sentences said within the same 50 ms are joined: the second replaced
  // the first before it was read ("2 images could not be uploaded" and
  // "Task started" come a quick answer apart).
  if (!said.length) {
    region.textContent = "";
    // A separate task, so the same sentence twice is still read out.
    setTimeout(() => {
      region.textContent = said.map((text) => (/[.!?…]$/.test(text) ? text : `${text}.`)).join(" ");
      said = [];
    }, 50);
  }
  said.push(text);
}

let placed = null; // where the page itself last put the focus

/** Move the focus to `el` as the page's own move (see focusIsFree). */
export function placeFocus(el, options = {}) {
  placed = el;
  el.focus(options);
}

/**
 * Whether the page may move the focus on its own: it is nowhere (the body,
 * or an element gone), on a disabled control, or still where the page put
 * it. Never away from where a person moved it (a new task card took the
 * focus, and scrolled the page, from whatever they were using).
 */
export function focusIsFree() {
  const active = document.activeElement;
  return !active || active === document.body || !active.isConnected || active.disabled === true || active === placed;
}
