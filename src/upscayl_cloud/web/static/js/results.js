// A task's delivered files: thumbnail, output size, download, and (when the
// original is still in this tab) the before/after comparison. Shared by the
// upscale view and the history page.

import { api } from "./api.js";
import { comparison } from "./compare.js";
import { h } from "./dom.js";
import { explain, formatBytes, formatDate } from "./messages.js";
import { downloadAsZip } from "./zip.js";

function expired(file) {
  return file.expiresAt && file.expiresAt <= Date.now();
}

// How long a signed download link lives (the server's limits say; an hour
// by default), and the margin kept before that: a result is kept for days,
// but its links expired after an hour, and Download then met a 410.
let linkSeconds = 3600;
const LINK_MARGIN_MS = 60_000;

export function setLinkLifetime(seconds) {
  if (Number.isFinite(seconds) && seconds > 0) linkSeconds = seconds;
}

/**
 * The task's files with links fit to use: those at hand while they are
 * fresh, else those of a new get-task-status (every call signs new ones).
 * `force` signs anew whatever their age (a thumbnail that failed to load);
 * calls made while one is asked share its answer, so a card of ten
 * thumbnails that all expired asks once. `links.current()` is the list at
 * hand, asking nothing.
 */
function freshLinks(files, taskId) {
  let current = files;
  let signedAt = Date.now();
  let asking = null;
  const links = async (force = false) => {
    const stale = Date.now() - signedAt > Math.max(0, linkSeconds * 1000 - LINK_MARGIN_MS);
    if (!(stale || force) || !taskId) return current;
    if (!asking) {
      asking = api
        .taskStatus(taskId)
        .then((data) => {
          current = data.files || [];
          signedAt = Date.now();
          return current;
        })
        .finally(() => {
          asking = null;
        });
    }
    return asking;
  };
  links.current = () => current;
  return links;
}

function placeholderThumb() {
  return h("div.thumb.placeholder", { "aria-hidden": "true" });
}

/**
 * The file's thumbnail. A thumbnail not yet loaded when its link expired
 * (lazy loading: a card scrolled into view after an hour on the history
 * page) failed for good; it is signed again once, and a placeholder stands
 * in if that fails too.
 */
function thumbnailOf(file, links) {
  if (!file.thumbnailLink || expired(file)) return placeholderThumb();
  const img = h("img.thumb", { src: file.thumbnailLink, alt: "", loading: "lazy" });
  let signedAgain = false;
  img.addEventListener("error", async () => {
    if (!signedAgain) {
      signedAgain = true;
      try {
        // A link signed since this one (the card's other thumbnails asked
        // already) is tried first: each ask spends the hourly status budget.
        const known = links.current().find((f) => f.fileName === file.fileName);
        const force = !known || known.thumbnailLink === img.getAttribute("src");
        const now = (await links(force)).find((f) => f.fileName === file.fileName);
        if (now && now.thumbnailLink) {
          img.src = now.thumbnailLink;
          return;
        }
      } catch {
        // fall through to the placeholder
      }
    }
    img.replaceWith(placeholderThumb());
  });
  return img;
}

function resultItem(file, original, links) {
  const name = file.processedFileName || file.originalFileName || file.fileName;
  const dims = file.dimensions ? `${file.dimensions.width} × ${file.dimensions.height} px` : "";
  // Two sources may share a result name (photo.jpg and photo.webp): each
  // says which it came from.
  const source = file.originalFileName && file.originalFileName !== name ? `from ${file.originalFileName}` : "";
  const facts = [source, dims, file.finalFileSize ? formatBytes(file.finalFileSize) : ""].filter(Boolean);
  const slot = h("div.compare-slot", { hidden: true });
  const actions = h("div.actions");
  const showError = (err) => {
    const shown = actions.querySelector("p.error") || actions.appendChild(h("p.error", { role: "alert" }));
    shown.textContent = explain(err);
  };
  // Download and Compare share it: a failure's words stayed after either
  // worked the next time.
  const clearError = () => {
    const shown = actions.querySelector("p.error");
    if (shown) shown.remove();
  };
  /** This file's download link as signed now (see freshLinks). */
  const fresh = async () => {
    const now = (await links()).find((f) => f.fileName === file.fileName);
    if (!now || !now.downloadLink) throw Object.assign(new Error("gone"), { code: "GONE" });
    return now.downloadLink;
  };
  if (expired(file) || !file.downloadLink) {
    actions.append(h("span.muted", {}, "Expired: results are kept for a limited time"));
  } else {
    const download = h("a.button", { href: file.downloadLink, download: name, "aria-label": `Download ${name}` }, "Download");
    download.addEventListener("click", async (event) => {
      if (download.dataset.fresh === "true") {
        delete download.dataset.fresh; // this click is the fresh link's own
        return;
      }
      event.preventDefault();
      try {
        download.href = await fresh();
        clearError();
        download.dataset.fresh = "true";
        download.click();
      } catch (err) {
        showError(err);
      }
    });
    actions.append(download);
    if (original) {
      const toggle = h("button.secondary", { type: "button", "aria-expanded": "false" }, "Compare");
      let opening = false; // a second click while the link is fetched does nothing
      toggle.addEventListener("click", async () => {
        const open = slot.hidden;
        if (opening) return;
        if (open && !slot.firstChild) {
          // The link as it is now, like Download's: the one the task
          // finished with expired after an hour, and showed a broken image.
          let after;
          opening = true;
          try {
            after = await fresh();
            clearError();
          } catch (err) {
            showError(err);
            return;
          } finally {
            opening = false;
          }
          slot.append(
            comparison({
              before: original,
              after,
              width: file.dimensions ? file.dimensions.width : 1,
              height: file.dimensions ? file.dimensions.height : 1,
              name,
              source: file.originalFileName || name,
            }),
          );
        }
        slot.hidden = !open;
        toggle.setAttribute("aria-expanded", String(open));
        toggle.textContent = open ? "Hide comparison" : "Compare";
      });
      actions.append(toggle);
    }
  }
  return h(
    "li.result",
    {},
    thumbnailOf(file, links),
    h(
      "div.result-meta",
      {},
      h("span.file-name", {}, name),
      h("span.file-facts", {}, facts.join(" · ")),
      file.expiresAt && !expired(file) ? h("span.help", {}, `Available until ${formatDate(file.expiresAt)}`) : null,
      actions,
    ),
    slot,
  );
}

/** files: the spec's ProcessedFile list; originals: Map(fileName -> object URL). */
export function resultList(files, originals = new Map(), zipName = "upscayl-results.zip", taskId = null) {
  const links = freshLinks(files, taskId);
  const list = h(
    "ul.results",
    { "aria-label": "Results" },
    files.map((f) => resultItem(f, originals.get(f.fileName), links)),
  );
  const live = files.filter((f) => f.downloadLink && !expired(f));
  if (live.length < 2) return list;
  const error = h("p.error", { role: "alert" });
  const button = h("button.secondary", { type: "button" }, `Download all ${live.length} as ZIP`);
  button.addEventListener("click", async () => {
    button.disabled = true;
    error.textContent = "";
    const label = button.textContent;
    button.textContent = "Preparing ZIP…";
    try {
      const now = (await links()).filter((f) => f.downloadLink && !expired(f));
      await downloadAsZip(
        now.map((f) => ({ name: f.processedFileName || f.fileName, url: f.downloadLink, size: f.finalFileSize })),
        zipName,
      );
    } catch (err) {
      error.textContent = explain(err);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  });
  return h("div", {}, h("div.actions", {}, button), error, list);
}
