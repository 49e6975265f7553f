from django.shortcuts import get_object_or_404, render

from articles.models import Article


def article_list(request):
    return render(request, "articles/article_list.html", {"articles": Article.published.all()})


def article_detail(request, slug):
    article = get_object_or_404(Article.published, slug=slug)
    # The page's room for {% presence_script %} in base.html (README: "The page's room").
    return render(request, "articles/article_detail.html", {"article": article, "presence_room": article})
