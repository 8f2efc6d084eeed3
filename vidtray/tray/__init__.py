"""Everything that needs a screen: the pystray icon and the Tk prompt popup."""
