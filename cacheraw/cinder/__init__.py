"""cacheraw inside Cinder: a volume driver that creates volumes from an image's RAW cache.

Imported by cinder-volume only (``volume_driver = cacheraw.cinder.driver.CacheRawRBDDriver``);
the cacheraw daemon never imports this package, and nothing here is needed without Cinder.
"""
