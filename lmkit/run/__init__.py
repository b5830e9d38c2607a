"""The ground floor: what every room of lmkit shares about a run. Its params and their schema
(``params``), its folder and the atomic writes into it (``folder``), progress events
(``progress``) and content digests of what a result came from (``digests``). Imports nothing
else of lmkit."""
