"""A retrieval explorer in the browser: ``python -m unimodal_free.explore --model M --gallery G`` serves a local
page to query a gallery by caption, picture or recording and click through the neighbours of any result."""
