// Before/after comparison: both images fill the same stage (the output's
// aspect ratio), so they are always at the same zoom and aligned pixel for
// pixel; the divider clips the upscaled one. The range input is the
// keyboard-accessible control; dragging on the picture moves it too (zoomed,
// by touch: dragging the divider itself, as a swipe elsewhere pans the picture).

import { h } from "./dom.js";

/** before/after: image URLs; width/height: the output's pixels; name: the
 * result's file name, source: the original's. */
export function comparison({ before, after, width, height, name, source = name }) {
  const afterImg = h("img.compare-after", { src: after, alt: `Upscaled: ${name}`, draggable: "false" });
  const beforeImg = h("img.compare-before", { src: before, alt: `Original: ${source}`, draggable: "false" });
  const divider = h("div.compare-divider", { "aria-hidden": "true" });
  const stage = h("div.compare-stage", {}, beforeImg, afterImg, divider);
  stage.style.aspectRatio = `${width} / ${height}`;
  // "Fit": as wide as the card allows, and no taller than most of the screen.
  const fitWidth = `min(100%, calc(70vh * ${width / height}))`;
  stage.style.width = fitWidth;
  // Zoomed, the view scrolls, and Chromium then makes it a Tab stop (arrow
  // keys pan it): a named region says what that stop is.
  const viewport = h("div.compare-viewport", { role: "region", "aria-label": `Comparison of ${name}` }, stage);

  const slider = h("input", {
    type: "range",
    min: "0",
    max: "100",
    value: "50",
    "aria-label": "Divider position: original on the left, upscaled on the right",
  });
  const zoom = h(
    "select",
    { "aria-label": "Zoom" },
    h("option", { value: "fit" }, "Fit"),
    h("option", { value: "1" }, "100 % (output pixels)"),
    h("option", { value: "2" }, "200 %"),
  );

  const place = (percent) => {
    stage.style.setProperty("--split", `${percent}%`);
    slider.value = String(Math.round(percent));
  };
  slider.addEventListener("input", () => place(Number(slider.value)));
  zoom.addEventListener("change", () => {
    const factor = zoom.value;
    stage.style.width = factor === "fit" ? fitWidth : `${width * Number(factor)}px`;
    viewport.classList.toggle("zoomed", factor !== "fit");
    // Zoomed wider than the screen, the view opened at the left edge: only
    // the original showed. It opens on the divider instead.
    const split = (Number(slider.value) / 100) * stage.offsetWidth;
    viewport.scrollLeft = Math.max(0, split - viewport.clientWidth / 2);
  });

  let dragging = false;
  const follow = (event) => {
    const box = stage.getBoundingClientRect();
    place(Math.min(100, Math.max(0, ((event.clientX - box.left) / box.width) * 100)));
  };
  stage.addEventListener("pointerdown", (event) => {
    // Zoomed, a finger on the picture pans it (touch-action in app.css) and
    // must not move the divider: only the divider's handle drags by touch
    // then. A mouse or pen does not pan by dragging, and still drags anywhere.
    const panning = event.pointerType === "touch" && viewport.classList.contains("zoomed");
    if (panning && event.target !== divider) return;
    dragging = true;
    stage.setPointerCapture(event.pointerId);
    follow(event);
  });
  stage.addEventListener("pointermove", (event) => dragging && follow(event));
  stage.addEventListener("pointerup", () => {
    dragging = false;
  });
  place(50);

  return h(
    "figure.compare",
    {},
    viewport,
    h("div.compare-controls", {}, h("label.compare-label", {}, "Before / after", slider), h("label.compare-label", {}, "Zoom", zoom)),
    h(
      "figcaption.help",
      {},
      "Left of the line: the original, enlarged by your browser. Right: the upscaled result. Zoomed in on a touch screen, drag the line itself to move it.",
    ),
  );
}
