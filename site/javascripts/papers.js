/* The papers table: facet filters, a free-text filter and sortable columns.
 *
 * The filter and sort state lives in the URL query (?modality=video&mechanism=similarity&q=...
 * &sort=year&order=desc), so a filtered view can be shared and restores on load. Set up on every
 * page load, including mkdocs-material's instant navigation, which swaps the page content and
 * emits on `document$` instead of reloading. No dependencies, nothing fetched.
 */
(function () {
  "use strict";

  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function all(root, selector) {
    return Array.prototype.slice.call(root.querySelectorAll(selector));
  }

  function hasOption(select, value) {
    return Array.prototype.some.call(select.options, function (option) {
      return option.value === value;
    });
  }

  function setup() {
    var root = document.querySelector("[data-papers]");
    if (!root || root.getAttribute("data-ready") === "true") return;
    var started = window.performance.now();
    var table = root.querySelector("[data-papers-table]");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var selects = all(root, "select[data-facet]");
    var search = root.querySelector("[data-filter-text]");
    var count = root.querySelector("[data-papers-count]");
    var resets = all(root, "[data-filter-reset]"); // the filters' Reset and the empty result's
    var notice = root.querySelector("[data-papers-notice]");
    var empty = root.querySelector("[data-papers-empty]");
    var headers = all(table, "th[data-column]");
    var sort = { key: "", order: "asc" };

    // What each row matches, read once: its facet values and its searchable text.
    var facets = selects.map(function (select) { return select.getAttribute("data-facet"); });
    var rowValues = rows.map(function (row) {
      var values = {};
      facets.forEach(function (facet) {
        values[facet] = (row.getAttribute("data-" + facet) || "").split("|"); // FACET_SEPARATOR
      });
      return values;
    });
    var rowText = rows.map(function (row) { return row.getAttribute("data-text") || ""; });

    // A shared address with a value the catalog lacks (?venue=Foo) shows every paper for that
    // facet, and says so instead of ignoring it silently.
    function readUrl() {
      var params = new URLSearchParams(window.location.search);
      var unknown = [];
      selects.forEach(function (select) {
        var facet = select.getAttribute("data-facet");
        var value = params.get(facet) || "";
        select.value = hasOption(select, value) ? value : "";
        if (value && !select.value) unknown.push(facet + " \u201c" + value + "\u201d");
      });
      notice.textContent = unknown.length
        ? "Not in the catalog, so not filtered on: " + unknown.join(", ") + "."
        : "";
      notice.hidden = !unknown.length;
      search.value = params.get("q") || "";
      var key = params.get("sort") || "";
      sort.key = headers.some(function (th) { return th.getAttribute("data-column") === key; }) ? key : "";
      sort.order = params.get("order") === "desc" ? "desc" : "asc";
    }

    function writeUrl() {
      var params = new URLSearchParams();
      selects.forEach(function (select) {
        if (select.value) params.set(select.getAttribute("data-facet"), select.value);
      });
      var words = search.value.trim();
      if (words) params.set("q", words);
      if (sort.key) {
        params.set("sort", sort.key);
        params.set("order", sort.order);
      }
      var query = params.toString();
      var target = window.location.pathname + (query ? "?" + query : "") + window.location.hash;
      window.history.replaceState(window.history.state, "", target);
    }

    function filter() {
      var terms = search.value.toLowerCase().split(/\s+/).filter(Boolean);
      var chosen = selects
        .map(function (select) { return [select.getAttribute("data-facet"), select.value]; })
        .filter(function (pair) { return pair[1]; });
      var shown = 0;
      rows.forEach(function (row, i) {
        var match = chosen.every(function (pair) {
          return rowValues[i][pair[0]].indexOf(pair[1]) >= 0;
        }) && terms.every(function (term) { return rowText[i].indexOf(term) >= 0; });
        row.hidden = !match;
        if (match) shown += 1;
      });
      count.textContent = shown === rows.length
        ? rows.length + " papers"
        : shown + " of " + rows.length + " papers";
      empty.hidden = shown > 0;
    }

    function order() {
      var column = -1;
      headers.forEach(function (th, i) {
        var active = th.getAttribute("data-column") === sort.key;
        if (active) column = i;
        th.setAttribute("aria-sort", active ? (sort.order === "desc" ? "descending" : "ascending") : "none");
      });
      var ordered = rows.map(function (row, i) { return i; });
      if (column >= 0) {
        var sign = sort.order === "desc" ? -1 : 1;
        var keys = rows.map(function (row) {
          var cell = row.cells[column];
          var key = cell.getAttribute("data-sort");
          return key === null ? cell.textContent.trim() : key;
        });
        ordered.sort(function (a, b) {
          if (!keys[a] !== !keys[b]) return keys[a] ? -1 : 1; // empty cells last either way
          return sign * collator.compare(keys[a], keys[b]) || a - b;
        });
      }
      var fragment = document.createDocumentFragment();
      ordered.forEach(function (i) { fragment.appendChild(rows[i]); });
      body.appendChild(fragment);
    }

    function changed() {
      notice.hidden = true;
      filter();
      writeUrl();
    }

    selects.forEach(function (select) { select.addEventListener("change", changed); });
    search.addEventListener("input", changed);
    headers.forEach(function (th) {
      th.querySelector("button").addEventListener("click", function () {
        var key = th.getAttribute("data-column");
        sort.order = sort.key === key && sort.order === "asc" ? "desc" : "asc";
        sort.key = key;
        order();
        writeUrl();
      });
    });
    resets.forEach(function (button) {
      button.addEventListener("click", function () {
        selects.forEach(function (select) { select.value = ""; });
        search.value = "";
        sort.key = "";
        changed();
        order();
      });
    });

    readUrl();
    filter();
    order();
    // The header row sticks to the page only where no box around the table scrolls (site.css):
    // mark the table's box when the table fits it, again whenever either changes size.
    var wrap = table.closest(".papers-table-wrap");
    if (wrap && window.ResizeObserver) {
      var fits = function () {
        wrap.toggleAttribute("data-fits", table.getBoundingClientRect().width <= wrap.clientWidth + 1);
      };
      var observer = new ResizeObserver(fits);
      observer.observe(wrap);
      observer.observe(table);
    }

    root.setAttribute("data-ready", "true");
    window.papersReadyAt = window.performance.now(); // ms since navigation start
    window.papersSetupMs = window.papersReadyAt - started; // ms spent in this setup
  }

  if (typeof window.document$ !== "undefined") {
    window.document$.subscribe(setup);
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setup);
  } else {
    setup();
  }
})();
