# attack: coroutine frame: async def + cr_frame
# expect: ast; compile
class Mechanism:
    async def probe(self):
        return 1

    def context(self, view):
        c = self.probe()
        return [{"title": "x", "text": str(c.cr_frame.f_globals)[:500]}]
