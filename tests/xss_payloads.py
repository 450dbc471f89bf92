"""Markup that must stay inert wherever stored text is shown: the sanitiser's unit tests and the browser tests
(tests/e2e) use the same list."""

from __future__ import annotations

# Each sets window.pwned or opens a dialog if it ever runs.
PAYLOADS = [
    "<img src=x onerror=alert(1)><b>bold</b>",
    '<img src="x" onerror="window.pwned = 3">',
    "<script>window.pwned = 1</script>",
    "<scr<script>ipt>window.pwned = 4</script>",
    "<svg onload=window.pwned=5><circle r=1 /></svg>",
    '<iframe src="javascript:window.pwned=6"></iframe>',
    '<a href="javascript:window.pwned=7">click</a>',
    '<a href="x" onclick="window.pwned=8">click</a>',
    "[click](javascript:window.pwned=9)",
    "[click](JaVaScRiPt:window.pwned=10)",
    "![image](javascript:window.pwned=11)",
    '![image](x){: onerror="window.pwned=12" }',
    '# Title {: onclick="window.pwned=13" style="color:red" }',
    "[click](data:text/html;base64,PHNjcmlwdD53aW5kb3cucHduZWQ9MTQ8L3NjcmlwdD4=)",
    '<div style="background:url(javascript:window.pwned=15)">styled</div>',
    "```html\n<script>window.pwned = 16</script>\n```",
    "`<img src=x onerror=window.pwned=17>`",
    '<details open ontoggle="window.pwned=18">x</details>',
    '<form action="javascript:window.pwned=19"><button>go</button></form>',
    '<math><mi xlink:href="javascript:window.pwned=20">x</mi></math>',
    '<object data="javascript:window.pwned=21"></object>',
    "&lt;script&gt;window.pwned = 22&lt;/script&gt;",
    '<p title="</p><img src=x onerror=window.pwned=23>">x</p>',
    "<!--><img src=x onerror=window.pwned=24>-->",
    "| a | b |\n|---|---|\n| <img src=x onerror=window.pwned=25> | [x](javascript:window.pwned=26) |",
]
