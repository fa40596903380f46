"""Image work for showing results, knowing nothing of Discord: fitting uploads, grids, the /usage chart,
draft thumbnails, and the thread pool that does it off the event loop."""
