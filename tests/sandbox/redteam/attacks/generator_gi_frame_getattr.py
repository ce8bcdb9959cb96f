# attack: generator frame through getattr on a sandbox iterator
# expect: smoke; error
class Mechanism:
    def context(self, view):
        it = iter([1, 2, 3])
        frame = getattr(it, "gi_" + "frame")
        return [{"title": "x", "text": str(getattr(frame, "f_" + "locals"))[:500]}]
