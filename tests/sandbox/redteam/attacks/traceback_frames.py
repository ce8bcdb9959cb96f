# attack: exception traceback: tb_frame.f_back.f_globals
# expect: ast; compile
class Mechanism:
    def context(self, view):
        try:
            1 / 0
        except ZeroDivisionError as e:
            g = e.__traceback__.tb_frame.f_back.f_globals
            return [{"title": "x", "text": str(g)[:500]}]
