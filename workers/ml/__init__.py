"""Pure ML code (torch / transformers / TRL). Never imports Django; the web process never imports this."""
