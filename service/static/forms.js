// After a failed submit, move the keyboard focus to what needs fixing: the first field
// marked invalid, else the first error message. Loaded as a file: the CSP allows no
// inline script.
(function () {
  "use strict";
  var target = document.querySelector('main [aria-invalid="true"]');
  if (target && target.tagName === "FIELDSET") {
    // A group of checkboxes: its first box takes the focus; the legend names the group.
    target = target.querySelector("input, select, textarea") || target;
  }
  if (!target) {
    target = document.querySelector("main .flash.error");
    if (target) {
      target.setAttribute("tabindex", "-1");
    }
  }
  if (target) {
    target.focus();
  }
})();
