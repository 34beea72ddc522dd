"""Flask's JSON out through orjson.

Every transition answers with the product's whole lifecycle, and stdlib json's encoder was the
largest single item of a worker's own CPU on the write path (see docs/PERFORMANCE.md).
orjson writes the same JSON several times faster. What Flask's provider does for types JSON
has no form for (dates as HTTP dates, Decimal, UUID, dataclasses, `__html__`) it still does:
orjson hands those to the provider's `default`. Reading JSON stays Flask's.
"""

from __future__ import annotations

import orjson
from flask.json.provider import DefaultJSONProvider

# Dates through Flask's `default` (an HTTP date, as before), not orjson's RFC 3339; dict keys
# that are not strings (ints, ...) as json.dumps writes them.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


class OrjsonProvider(DefaultJSONProvider):
    def dumps(self, obj, **kwargs) -> str:
        if kwargs:  # indent, sort_keys, ...: what only json.dumps does
            return super().dumps(obj, **kwargs)
        body = self._orjson(obj, 0)
        return body.decode() if body is not None else super().dumps(obj)

    def response(self, *args, **kwargs):
        """As Flask's, minus a str made and encoded again: orjson's bytes go out as they are."""
        obj = self._prepare_response_obj(args, kwargs)
        body = None
        if self.compact is not False and not (self.compact is None and self._app.debug):
            body = self._orjson(obj, orjson.OPT_APPEND_NEWLINE)
        if body is None:
            return super().response(obj)
        return self._app.response_class(body, mimetype=self.mimetype)

    def _orjson(self, obj, options: int) -> bytes | None:
        """orjson's JSON of `obj`, or None for what only json.dumps writes: a string with a lone
        surrogate (JSON can escape one; UTF-8 cannot hold it), an integer wider than 64 bits."""
        options |= _OPTIONS | (orjson.OPT_SORT_KEYS if self.sort_keys else 0)
        try:
            return orjson.dumps(obj, default=self.default, option=options)
        except TypeError:
            return None
