"""The blog's own admin site: no autodiscovery (SimpleAdminConfig), everything registered here."""

from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User

import presence.admin

from articles.admin import ArticleAdmin
from articles.models import Article


class BlogAdminSite(admin.AdminSite):
    site_header = "博客管理"
    site_title = "博客管理"
    index_title = "站点管理"


site = BlogAdminSite(name="blogadmin")
site.register(Article, ArticleAdmin)
site.register(User, UserAdmin)
site.register(Group, GroupAdmin)
# README.md, "Admin on your own AdminSite".
presence.admin.register(site)
