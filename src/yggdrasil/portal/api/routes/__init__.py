"""Route modules: the JSON API (`account`, `organizations`, `tickets`) and the pages (`web`)."""
