/* Tables wider than the screen scroll inside their box. Make every such box keyboard-reachable
 * (focus it, then the arrow keys scroll) and name it after the section it sits in, for screen
 * readers (WCAG 2.1.1; axe's scrollable-region-focusable). Runs on every page load, including
 * mkdocs-material's instant navigation, after the theme has wrapped its tables.
 */
(function () {
  "use strict";

  var BOXES = ".md-typeset__scrollwrap, .papers-table-wrap, .results-wrap";

  function sectionOf(box) {
    var name = "";
    document.querySelectorAll("article h1, article h2, article h3").forEach(function (heading) {
      if (heading.compareDocumentPosition(box) & Node.DOCUMENT_POSITION_FOLLOWING) {
        name = heading.textContent.replace(/\u00b6/g, "").trim(); // without the permalink mark
      }
    });
    return name;
  }

  function setup() {
    document.querySelectorAll(BOXES).forEach(function (box) {
      // one tab stop per table: the innermost box (the theme wraps our own boxes' tables again)
      if (!box.querySelector("table") || box.querySelector(BOXES)) return;
      box.setAttribute("tabindex", "0");
      box.setAttribute("role", "region");
      box.setAttribute("aria-label", "Table: " + (sectionOf(box) || document.title));
    });
  }

  if (typeof window.document$ !== "undefined") {
    window.document$.subscribe(setup);
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setup);
  } else {
    setup();
  }
})();
