/* PrefArena: images beside texts (window.PrefImage), shared by pages that show image prompts and responses.
 *
 * An image is an <img> whose src is the server's `/images/<sha256>` URL (never a URL from the content itself:
 * the server resolves stored references). Panes fit their image by default; "actual size" (key Z on the
 * annotate page) shows every image at its own size in panes that scroll together; a click on an image opens it
 * alone, full size, in a modal dialog (Esc or a click closes it). No inline styles: classes only (CSP).
 */
(function () {
  "use strict";

  let dialog = null;

  function zoomDialog() {
    if (dialog) return dialog;
    dialog = document.createElement("dialog");
    dialog.id = "image-zoom";
    dialog.className = "image-zoom";
    dialog.setAttribute("aria-label", "Image at full size");
    dialog.addEventListener("click", () => dialog.close());
    document.body.append(dialog);
    return dialog;
  }

  /** Open `image` ({url, width, height}) alone at full size. */
  function openZoom(image, label) {
    const box = zoomDialog();
    const img = document.createElement("img");
    img.src = image.url;
    img.alt = label;
    const caption = document.createElement("p");
    caption.className = "image-zoom-caption";
    const size = Number(image.width) > 0 ? ` · ${image.width}×${image.height}` : "";
    caption.textContent = `${label}${size} · Esc or click to close`;
    box.replaceChildren(caption, img);
    if (!box.open) box.showModal();
  }

  /** A figure showing `image` ({url, width, height, content_type}), labelled `label` for screen readers. */
  function figure(image, label, className) {
    const fig = document.createElement("figure");
    fig.className = `image-pane${className ? ` ${className}` : ""}`;
    const img = document.createElement("img");
    img.src = image.url;
    img.alt = label;
    const sized = Number(image.width) > 0 && Number(image.height) > 0;
    if (sized) {
      img.width = image.width; // the layout keeps the image's place (and aspect ratio) while it loads
      img.height = image.height;
    }
    img.decoding = "async";
    img.draggable = false; // a ranking row drags as a whole
    img.title = "Click to enlarge";
    img.addEventListener("click", () => openZoom(image, label));
    fig.append(img);
    if (sized) {
      const caption = document.createElement("figcaption");
      caption.className = "muted";
      caption.textContent = `${image.width}×${image.height}`;
      fig.append(caption);
    }
    return fig;
  }

  function isZoomOpen() {
    return Boolean(dialog && dialog.open);
  }

  window.PrefImage = { figure, openZoom, isZoomOpen };
})();
