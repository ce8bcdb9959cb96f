# attack: exception traceback through getattr strings
# expect: smoke; error
class Mechanism:
    def context(self, view):
        try:
            1 / 0
        except ZeroDivisionError as e:
            tb = getattr(e, "__trace" + "back__")
            frame = getattr(tb, "tb_" + "frame")
            g = getattr(getattr(frame, "f_" + "back"), "f_" + "globals")
            return [{"title": "x", "text": str(g)[:500]}]
